"""rlds_loader: read RLDS datasets (TFDS on-disk layout) without TensorFlow, as a stateless, exactly
resumable sample stream."""

__version__ = "0.1.0"
