"""dunnage.scheduler_extender"""
