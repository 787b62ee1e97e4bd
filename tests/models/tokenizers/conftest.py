"""One thread per library: these tests share 2 cores with other work (environment.md)."""

import faiss
import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)
