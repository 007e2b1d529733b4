"""genprof.cli"""
