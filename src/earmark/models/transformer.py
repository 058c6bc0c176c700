"""(being written: registers its models here)"""
