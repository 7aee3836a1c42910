# Runs first at every reset. Kept minimal: a bug here would stop even safe mode.
import gc

gc.collect()
