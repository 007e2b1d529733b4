"""genprof.analysis"""
