"""The self-supervised process reward model (SPRM): the head and its verifier (``head``),
step features read from the policy's GGUF (``features``), sequences reused by prefix
(``prefix``) and training a head from labelled examples (``train``)."""
