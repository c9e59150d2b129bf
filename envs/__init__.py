"""Environment factories: Atari through ale-py's vector env, Gymnasium classic control."""
