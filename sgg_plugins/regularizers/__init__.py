"""Host-free regularizers: plain PyTorch modules and functions with tensor inputs."""
