"""dunnage.devcluster"""
