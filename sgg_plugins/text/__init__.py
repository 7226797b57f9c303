"""Text embeddings (OpenCLIP) used by relational contrastive learning, computed once and cached."""
