"""dunnage.cluster"""
