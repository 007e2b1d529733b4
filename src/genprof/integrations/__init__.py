"""genprof.integrations"""
