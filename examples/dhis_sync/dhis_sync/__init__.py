# The Celery app is loaded by the dhis_celery role's settings when Celery is enabled
# (the guide's step 1.1 asks to uncomment the two lines below; the role does not edit code).
# from .celery import app as celery_app
# __all__ = ('celery_app',)
