"""dunnage.autoscaling"""
