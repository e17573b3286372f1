"""dunnage.sim"""
