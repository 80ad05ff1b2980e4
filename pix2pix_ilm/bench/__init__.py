"""``pix2pix-ilm bench``: ``measure`` (the peak probes, one row in its process) and ``run`` (rows, table, JSON)."""
