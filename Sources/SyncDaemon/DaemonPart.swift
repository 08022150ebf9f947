import Dispatch
import Logging
import ServiceLifecycle
import UnixSignals

/// One part of the daemon (its folders, the session listener, gossip, the dialer, the control
/// socket) as a `Service` of the daemon's `ServiceGroup`. Its `run()` starts the part once the part
/// before it in the group has started, waits for graceful shutdown (or cancellation), and stops
/// it. `ServiceGroup` starts every service at once and shuts them down one by one in reverse
/// order; the `StartGate`s make the start follow the group's order too.
///
/// Starting and stopping block (binding sockets, NIO's `wait()`, waiting for an apply in flight),
/// so they run on a Dispatch thread, not on one of Swift concurrency's few.
struct DaemonPart: Service, CustomStringConvertible {
    let description: String
    private let start: @Sendable () throws -> Void
    private let stop: @Sendable () -> Void
    /// Opened by the part before this one once it has started; nil for the first part.
    let after: StartGate?
    /// Opened once this part has started.
    let started = StartGate()

    init(_ name: String, after: StartGate?, start: @escaping @Sendable () throws -> Void, stop: @escaping @Sendable () -> Void) {
        self.description = name
        self.after = after
        self.start = start
        self.stop = stop
    }

    func run() async throws {
        if let after {
            // Shut down or cancelled before its turn came: nothing started, nothing to stop.
            guard (try? await cancelWhenGracefulShutdown({ try await after.wait() })) != nil else { return }
        }
        try await offloaded(start)
        started.open()
        try? await gracefulShutdown()   // returns on graceful shutdown, throws on cancellation: stop either way
        try? await offloaded(stop)
    }
}

/// Opens once; its one waiter (the next service in the group) resumes then.
final class StartGate: Sendable {
    private let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init() { (stream, continuation) = AsyncStream.makeStream() }

    func open() { continuation.finish() }

    /// Returns once the gate is open; throws `CancellationError` if the task is cancelled first.
    /// One waiter only (an `AsyncStream` has one consumer).
    func wait() async throws {
        for await _ in stream {}
        try Task.checkCancellation()
    }
}

/// SIGHUP asks the daemon to reload its configuration (`Daemon.reload`): each one runs `reload`
/// on a Dispatch thread, one at a time, never left to SIGHUP's default action (exit). First in the
/// group: it traps SIGHUP before anything else starts and stops trapping it only after everything
/// stopped.
struct HangupService: Service, CustomStringConvertible {
    let logger: Logger
    let reload: @Sendable () -> Void
    let started = StartGate()
    var description: String { "SIGHUP" }

    func run() async throws {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        started.open()
        for await _ in hangups.cancelOnGracefulShutdown() {
            logger.notice("SIGHUP: reloading the configuration")
            try? await offloaded(reload)
        }
    }
}

/// Runs blocking work on a Dispatch thread and waits for it without holding a concurrency thread.
func offloaded<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
    }
}
