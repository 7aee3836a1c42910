"""Edge automation: features that decide in the cabinet, through the command service, broker or not."""
