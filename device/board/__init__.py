"""The board side: standard library, numpy and LiteRT (``micro.py``: tflite-micro) only, no
TensorFlow and nothing else of edgekit. Each file also runs as a script on its own."""
