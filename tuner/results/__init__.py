"""What a sweep leaves: results tables, the front and B_crit fit, figures, Tune's state."""
