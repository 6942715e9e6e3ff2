"""How a trial runs under Ray: a Tune function trainable, or a Ray Train worker group."""
