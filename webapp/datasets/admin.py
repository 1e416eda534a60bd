from django.contrib import admin

from .models import Dataset


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ("name", "version", "team", "status", "file_format", "size_bytes", "archived", "created_at")
    list_filter = ("status", "archived", "team")
    search_fields = ("name", "sha256")
