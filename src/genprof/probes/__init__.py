"""genprof.probes"""
