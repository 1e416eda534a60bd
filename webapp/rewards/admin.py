from django.contrib import admin

from .models import RewardConfig


@admin.register(RewardConfig)
class RewardConfigAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "team", "archived", "created_at")
    list_filter = ("archived", "team")
