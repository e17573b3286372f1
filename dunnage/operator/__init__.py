"""dunnage.operator"""
