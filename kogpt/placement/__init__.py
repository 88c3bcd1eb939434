"""Placement: the options, the hardware, and the plan that decides where every weight goes."""
