"""The HTTP shells: one connection stack (connections), polls (poller, auth, decoding) and
deliveries (sender)."""
