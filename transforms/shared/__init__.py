"""Rules that several rooms of `transforms/` use, each with one home here.

- windows.py   calendar windows (hour|day|week|month in an IANA zone): the usage query, alerts, reports
- percent.py   the percentage change from a previous value: the usage query and the alerts
"""
