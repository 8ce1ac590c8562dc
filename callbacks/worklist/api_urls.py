from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from callbacks.worklist import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("tasks/", api.TaskListView.as_view(), name="api-followup-tasks"),
    path("tasks/counts/", api.TaskCountsView.as_view(), name="api-followup-task-counts"),
    path("tasks/<int:task_id>/", api.TaskDetailView.as_view(), name="api-followup-task"),
    path("tasks/<int:task_id>/claim/", api.TaskClaimView.as_view(), name="api-followup-task-claim"),
    path("tasks/<int:task_id>/release/", api.TaskReleaseView.as_view(), name="api-followup-task-release"),
    path("tasks/<int:task_id>/assign/", api.TaskAssignView.as_view(), name="api-followup-task-assign"),
    path("tasks/<int:task_id>/attempts/", api.TaskAttemptView.as_view(), name="api-followup-task-attempts"),
    path("tasks/<int:task_id>/phone/", api.TaskPhoneView.as_view(), name="api-followup-task-phone"),
    path("departments/", api.DepartmentListView.as_view(), name="api-followup-departments"),
]
