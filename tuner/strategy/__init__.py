"""How trials are proposed and stopped: search algorithms, guided order, schedulers."""
