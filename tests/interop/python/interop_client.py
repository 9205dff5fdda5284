"""A real gRPC peer for GrpcBoard's interop tests: Debian's python3-grpcio calling the server.

Run by tests/GrpcBoard.Server.Tests/PythonInteropTests.cs as
    /usr/bin/python3 interop_client.py --target 127.0.0.1:PORT --gen DIR --case NAME
where DIR holds modules generated from protos/ by protoc 3.21 and grpc_python_plugin.
Prints "PASS <case>" on success; any failed check raises (non-zero exit).
"""
import argparse
import sys
import threading


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--gen", required=True)
    parser.add_argument("--case", required=True)
    args = parser.parse_args()
    sys.path.insert(0, args.gen)

    import grpc
    from grpcboard.v1 import board_service_pb2 as pb
    from grpcboard.v1 import board_service_pb2_grpc as pb_grpc
    from grpcboard.v1 import task_pb2, event_pb2
    import health_pb2
    import health_pb2_grpc
    from google.rpc import status_pb2, error_details_pb2

    channel = grpc.insecure_channel(args.target)
    board = pb_grpc.BoardServiceStub(channel)
    wf = "py-" + args.case

    def check(condition, what):
        if not condition:
            raise AssertionError(what)

    def error_info(err):
        """The ErrorInfo the server packs into grpc-status-details-bin."""
        for key, value in err.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                status = status_pb2.Status.FromString(value)
                check(status.code == err.code().value[0], "status code in details matches")
                for detail in status.details:
                    info = error_details_pb2.ErrorInfo()
                    if detail.Unpack(info):
                        return info
        raise AssertionError("no ErrorInfo in grpc-status-details-bin")

    board.CreateWorkflow(pb.CreateWorkflowRequest(workflow_id=wf, goal="interop"), timeout=10)

    if args.case == "unary":
        posted = board.PostTasks(pb.PostTasksRequest(workflow_id=wf, tasks=[
            task_pb2.TaskSpec(id="a", payload=b"hello", content_type="text/plain", priority=3),
            task_pb2.TaskSpec(id="b", depends_on=["a"]),
        ]), timeout=10)
        check([t.state for t in posted.tasks] == [task_pb2.TASK_STATE_READY, task_pb2.TASK_STATE_PENDING], "post states")
        claim = board.ClaimTask(pb.ClaimTaskRequest(workflow_id=wf, worker_id="python"), timeout=10)
        check(claim.task.id == "a" and claim.task.payload == b"hello", "claimed a")
        check(claim.fencing_token > 0, "token issued")
        done = board.CompleteTask(pb.CompleteTaskRequest(workflow_id=wf, task_id="a", fencing_token=claim.fencing_token, result=b"42"), timeout=10)
        check(list(done.ready_dependents) == ["b"], "b became ready")
        got = board.GetTask(pb.GetTaskRequest(workflow_id=wf, task_id="a"), timeout=10)
        check(got.task.result == b"42" and got.task.owner == "python", "result stored")
        check(got.header.revision == done.header.revision, "revision header")

    elif args.case == "watch":
        events = []
        ready = threading.Event()

        def watch():
            for message in board.Watch(pb.WatchRequest(workflow_id=wf, start_revision=1), timeout=20):
                if message.WhichOneof("message") == "progress":
                    ready.set()
                    continue
                events.append(message.event)
                if len(events) == 11:
                    return

        thread = threading.Thread(target=watch)
        thread.start()
        check(ready.wait(10), "caught-up progress")
        for i in range(10):
            board.PostTasks(pb.PostTasksRequest(workflow_id=wf, tasks=[task_pb2.TaskSpec(id=f"t{i}")]), timeout=10)
        thread.join(20)
        check(not thread.is_alive(), "watch finished")
        check([e.revision for e in events] == list(range(1, 12)), f"contiguous revisions {[e.revision for e in events]}")
        check(events[0].kind == event_pb2.EVENT_KIND_WORKFLOW_CREATED, "first is creation")
        check(all(e.kind == event_pb2.EVENT_KIND_TASK_POSTED for e in events[1:]), "then posts")
        check([e.task.id for e in events[1:]] == [f"t{i}" for i in range(10)], "task ids in order")

    elif args.case == "deadline":
        try:
            for _ in board.Watch(pb.WatchRequest(workflow_id=wf), timeout=0.5):
                pass
            raise AssertionError("the watch should have hit its deadline")
        except grpc.RpcError as err:
            check(err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"got {err.code()}")
        # The server keeps serving after the cut.
        board.GetWorkflow(pb.GetWorkflowRequest(workflow_id=wf), timeout=10)

    elif args.case == "error":
        try:
            board.GetWorkflow(pb.GetWorkflowRequest(workflow_id="does-not-exist"), timeout=10)
            raise AssertionError("expected NOT_FOUND")
        except grpc.RpcError as err:
            check(err.code() == grpc.StatusCode.NOT_FOUND, f"got {err.code()}")
            info = error_info(err)
            check(info.reason == "WORKFLOW_NOT_FOUND" and info.domain == "grpcboard.dev", f"reason {info.reason}")
            check(info.metadata["workflow_id"] == "does-not-exist", "metadata")
        board.PostTasks(pb.PostTasksRequest(workflow_id=wf, tasks=[task_pb2.TaskSpec(id="t")]), timeout=10)
        first = board.ClaimTask(pb.ClaimTaskRequest(workflow_id=wf, task_id="t", worker_id="p1"), timeout=10)
        board.ReleaseTask(pb.ReleaseTaskRequest(workflow_id=wf, task_id="t", fencing_token=first.fencing_token), timeout=10)
        second = board.ClaimTask(pb.ClaimTaskRequest(workflow_id=wf, task_id="t", worker_id="p2"), timeout=10)
        try:
            board.CompleteTask(pb.CompleteTaskRequest(workflow_id=wf, task_id="t", fencing_token=first.fencing_token), timeout=10)
            raise AssertionError("expected a stale token refusal")
        except grpc.RpcError as err:
            check(err.code() == grpc.StatusCode.FAILED_PRECONDITION, f"got {err.code()}")
            info = error_info(err)
            check(info.reason == "FENCING_TOKEN_STALE", f"reason {info.reason}")
            check(int(info.metadata["fencing_token"]) == second.fencing_token, "current token in metadata")

    elif args.case == "gzip":
        payload = b"x" * 100_000
        posted = board.PostTasks(pb.PostTasksRequest(workflow_id=wf, tasks=[task_pb2.TaskSpec(id="big", payload=payload)]),
                                 timeout=10, compression=grpc.Compression.Gzip)
        check(posted.tasks[0].payload == payload, "gzip request decoded")
        got = board.GetTask(pb.GetTaskRequest(workflow_id=wf, task_id="big"), timeout=10, compression=grpc.Compression.Gzip)
        check(got.task.payload == payload, "payload round trip")

    elif args.case == "health":
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        check(reply.status == health_pb2.HealthCheckResponse.SERVING, "serving")
        reply = health.Check(health_pb2.HealthCheckRequest(service="grpcboard.v1.BoardService"), timeout=10)
        check(reply.status == health_pb2.HealthCheckResponse.SERVING, "board serving")

    else:
        raise SystemExit(f"unknown case {args.case}")

    channel.close()
    print(f"PASS {args.case}")


if __name__ == "__main__":
    main()
