"""genprof.planning"""
