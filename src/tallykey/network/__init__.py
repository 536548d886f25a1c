"""Who is calling, by address: the one client-IP rule of every surface (`client_ip`) and
the per-network throttle of failed attempts (`limiter`)."""
