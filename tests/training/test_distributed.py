"""One training process listens on the loopback interface only (c10d store and gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seqrec_pipeline.training.distributed import launcher_free_env

PROBE = """
import json, os
from seqrec_pipeline.training.distributed import setup_distributed
setup_distributed()
sockets = set()
for fd in os.listdir("/proc/self/fd"):
    try:
        sockets.add(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # the listing's own descriptor is gone already
        pass
listening = []
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).read().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and f"socket:[{fields[9]}]" in sockets:  # LISTEN, owned by this process
            address, port = fields[1].split(":")
            listening.append([address, int(port, 16)])
print(json.dumps({"port": int(os.environ["MASTER_PORT"]), "listening": listening}))
"""

# /proc/net/tcp{,6} addresses: hex, 32-bit words in host (little-endian) order
LOOPBACK = {"0100007F",  # 127.0.0.1
            "00000000000000000000000001000000",  # ::1
            "0000000000000000FFFF00000100007F"}  # ::ffff:127.0.0.1


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_single_process_group_listens_on_loopback_only():
    env = launcher_free_env() | {"PYTHONPATH": os.pathsep.join(sys.path)}  # a fresh process: no group yet
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["port"] in [port for _, port in found["listening"]]  # the c10d store is among them
    assert {address for address, _ in found["listening"]} <= LOOPBACK, found
