"""Host adapters. Each host's adapter is the only place that knows that host's internals."""
