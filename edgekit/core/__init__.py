"""The base layer: what every verb and the app build on, importing nothing above it.

``compat`` (the one TensorFlow/Keras/tfmot import), ``errors``, ``io`` (the output policy),
``limits``, ``data``, ``modelfile`` (the safety scan), ``saving`` (load/save), ``bridge`` (Keras 3
↔ tf_keras), ``graph`` (functional-graph rewrites), ``layers`` (edgekit's custom Keras objects),
``wrappers`` (tfmot's wrappers), ``results`` and ``progress`` (live lines). Importing this package
imports none of them.
"""
