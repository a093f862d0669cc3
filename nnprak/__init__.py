"""nnprak: face recognition on LFW, from MTCNN crops to CNNs, transfer learning and face embeddings."""

__version__ = "0.1.0"
