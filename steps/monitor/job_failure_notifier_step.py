"""JobFailureNotifier: tells someone when a job has failed for good.

Written exactly as a Motia 0.x Python step (camelCase config, a JSON-schema ``input``, ``context``
with ``await context.emit({...})``, ``context.logger.warn(msg, {...})``), to show that such steps run
unchanged. With a JSON-schema input the handler gets a plain dict.
"""

from pydantic import BaseModel


class JobFailedInput(BaseModel):
    jobId: str
    type: str
    error: str
    attempts: int = 0
    retryable: bool = False


config = {
    "type": "event",
    "name": "JobFailureNotifier",
    "description": "Sends a notification when a job fails and will not be retried",
    "subscribes": ["job.failed"],
    "emits": [{"topic": "notification.sent", "label": "Failure notice", "conditional": True}],
    "input": JobFailedInput.model_json_schema(),
    "flows": ["job-monitoring"],
}


async def handler(input_data, context):
    if input_data.get("retryable"):
        return  # the scheduler will try again; only final failures are worth a message

    jobs = await context.state.get_group("jobs")
    failed_total = len([job for job in jobs if job.get("status") == "failed"])

    context.logger.warn("Job failed permanently", {
        "jobId": input_data["jobId"],
        "error": input_data["error"],
    })

    await context.emit({
        "topic": "notification.sent",
        "data": {
            "jobId": input_data["jobId"],
            "channel": "email",
            "message": f"Job {input_data['jobId']} ({input_data['type']}) failed: {input_data['error']}",
            "failedJobs": failed_total,
        },
    })
