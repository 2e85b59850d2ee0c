"""Serving: an OpenAI-compatible HTTP server (:mod:`tabes.serve.app`, the serve extra) over a
batching engine (:mod:`tabes.serve.engine`), with a live page of the denoising at ``/``."""
