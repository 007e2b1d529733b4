"""genprof.render"""
