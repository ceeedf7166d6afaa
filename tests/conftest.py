"Shared pytest fixtures: an isolated cache, offline hub, and a socket guard that refuses non-loopback connections."
import atexit, os, shutil, socket, tempfile
import pytest

# Offline and isolated before anything imports timm / huggingface_hub. The cache directory is made only when the caller
# gave none, and removed when the test process exits.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if not os.environ.get("CELLNB_CACHE_DIR"):
    os.environ["CELLNB_CACHE_DIR"] = _cache = tempfile.mkdtemp(prefix="cellnb-test-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)

_LOOPBACK = ("127.", "localhost", "::1", "0.0.0.0")

def _is_local(addr):
    if isinstance(addr, tuple) and addr: addr = addr[0]
    if isinstance(addr, bytes): addr = addr.decode()
    return not isinstance(addr, str) or addr.startswith(_LOOPBACK) or addr.startswith("/")

@pytest.fixture
def no_network(monkeypatch):
    "Refuse every socket connection that leaves this machine (loopback and unix sockets stay allowed)."
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    def guard(real):
        def connect(self, addr, *a, **k):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(addr):
                raise OSError(f"network disabled in tests: tried to reach {addr!r}")
            return real(self, addr, *a, **k)
        return connect
    monkeypatch.setattr(socket.socket, "connect", guard(real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(real_connect_ex))
    def no_dns(host, *a, **k):
        if isinstance(host, (str, bytes)) and not _is_local(host): raise OSError(f"network disabled in tests: DNS lookup of {host!r}")
        return real_gai(host, *a, **k)
    real_gai = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    yield
