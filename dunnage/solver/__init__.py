"""dunnage.solver"""
