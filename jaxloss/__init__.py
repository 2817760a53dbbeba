"""jaxloss."""
