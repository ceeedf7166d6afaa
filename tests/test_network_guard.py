import socket, pytest

def test_no_network_refuses_outside_hosts(no_network):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(OSError, match="network disabled"): s.connect(("93.184.216.34", 80))
    with pytest.raises(OSError, match="network disabled"): socket.getaddrinfo("example.org", 443)
    s.close()

def test_no_network_keeps_loopback(no_network):
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    c = socket.socket(); c.connect(srv.getsockname()); c.close(); srv.close()
