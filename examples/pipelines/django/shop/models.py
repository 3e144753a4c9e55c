from django.db import models
from django.utils import timezone


class Sale(models.Model):
    """public.sales: ledgeradmin's rule `sale` posts a journal entry for each completed sale."""

    customer = models.TextField()
    sold_at = models.DateTimeField(default=timezone.now, db_index=True)
    status = models.TextField(default="completed")  # draft | completed | cancelled
    currency = models.CharField(max_length=3, default="USD")
    payment_method = models.TextField(default="invoice")  # cash | card | invoice
    total = models.DecimalField(max_digits=14, decimal_places=2)
    tax = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    note = models.TextField(null=True, blank=True)

    class Meta:
        db_table = "sales"
