import Foundation
import Logging
import ServiceLifecycle
import Subprocess
import SyncFS
import SystemPackage

/// When one folder's `on_apply` hook runs, as a pure state machine (the time is passed in):
/// one run at a time; paths of batches applied while a run is going, or while it backs off,
/// are gathered into the next run; after a failure the next run waits `backoff`, doubled per
/// consecutive failure up to `maxBackoff`, and gets the failed run's paths again.
struct HookSchedule: Equatable {
    enum Next: Equatable {
        /// Nothing to run.
        case idle
        /// Something to run, not before this time.
        case wait(until: Double)
        /// Run now with these paths.
        case run([String])
    }

    let backoff: Double
    let maxBackoff: Double
    /// Paths waiting for the next run, in order, without repeats.
    private(set) var pending: [String] = []
    private var pendingSet: Set<String> = []
    private(set) var running = false
    private(set) var failures = 0
    private var notBefore: Double = 0

    init(backoff: Double, maxBackoff: Double) { self.backoff = backoff; self.maxBackoff = maxBackoff }

    mutating func applied(_ paths: [String]) {
        for p in paths where pendingSet.insert(p).inserted { pending.append(p) }
    }

    /// What to do at `now`; `.run` marks the run started and takes the pending paths.
    mutating func next(now: Double) -> Next {
        guard !running, !pending.isEmpty else { return .idle }
        guard now >= notBefore else { return .wait(until: notBefore) }
        running = true
        defer { pending = []; pendingSet = [] }
        return .run(pending)
    }

    /// The run of `paths` ended at `now`.
    mutating func finished(_ paths: [String], succeeded: Bool, now: Double) {
        running = false
        if succeeded {
            failures = 0
            notBefore = now
        } else {
            failures += 1
            notBefore = now + delay
            // Passed again (ahead of what came meanwhile): the application has not seen them.
            let again = paths.filter { !pendingSet.contains($0) }
            pending = again + pending
            pendingSet.formUnion(again)
        }
    }

    /// The wait after the failures so far.
    var delay: Double {
        guard failures > 0 else { return 0 }
        return min(maxBackoff, backoff * pow(2, Double(failures - 1)))
    }
}

/// Runs the `on_apply` hooks: a part of the daemon's `ServiceGroup` that reads `DaemonEvents` and,
/// for each folder with a hook, runs it after the batches applied there (`HookSchedule` decides
/// when). A run is `/bin/sh -c COMMAND` in the folder, with the changed paths (relative to the
/// folder, one per line) on stdin and in `SYNCD_PATHS`, and `SYNCD_FOLDER`, `SYNCD_PEER`; its
/// output goes to the daemon's log. A hook that outlives `timeout` gets SIGTERM (its process
/// group), then SIGKILL.
final class ApplyHooks: Service, @unchecked Sendable {
    private let events: DaemonEvents
    private let hooks: DaemonConfiguration.Hooks
    private let perFolder: [String: String]
    private let logger: Logger
    /// Opened once it listens for events (the next part then starts).
    let started = StartGate()
    let after: StartGate?

    /// `SYNCD_PATHS` holds at most this many bytes; past it, stdin alone has every path and
    /// `SYNCD_PATHS_TRUNCATED=1` says so.
    static let environmentLimit = 64 * 1024

    init(events: DaemonEvents, configuration: DaemonConfiguration, logger: Logger, after: StartGate?) {
        self.events = events
        self.hooks = configuration.hooks
        self.perFolder = Dictionary(configuration.folders.compactMap { f in f.onApply.map { (FolderPaths.normalize(f.path), $0) } },
                                    uniquingKeysWith: { a, _ in a })
        self.logger = logger
        self.after = after
    }

    /// The hook of the folder at `path`, nil when it has none.
    func command(for path: String) -> String? { perFolder[path] ?? hooks.onApply }

    var isConfigured: Bool { hooks.onApply != nil || !perFolder.isEmpty }

    func run() async throws {
        if let after {
            guard (try? await cancelWhenGracefulShutdown({ try await after.wait() })) != nil else { return }
        }
        guard isConfigured else {
            started.open()
            try? await gracefulShutdown()
            return
        }
        let stream = events.subscribe()
        started.open()
        logger.info("on_apply hooks on for \(perFolder.isEmpty ? "every folder" : perFolder.keys.sorted().joined(separator: ", "))\(hooks.onApply != nil && !perFolder.isEmpty ? " and every other folder" : "")")
        // One worker per folder, fed by the event loop below; all end with the stream.
        await withTaskGroup(of: Void.self) { group in
            var workers: [String: AsyncStream<DaemonEvent>.Continuation] = [:]
            for await event in stream.cancelOnGracefulShutdown() where event.kind == .batchApplied {
                guard let command = command(for: event.folder) else { continue }
                if workers[event.folder] == nil {
                    let (feed, continuation) = AsyncStream.makeStream(of: DaemonEvent.self)
                    workers[event.folder] = continuation
                    let folder = event.folder
                    group.addTask { [self] in await work(folder: folder, command: command, feed: feed) }
                }
                workers[event.folder]?.yield(event)
            }
            for continuation in workers.values { continuation.finish() }
        }
    }

    /// One folder's runs, one at a time, until its feed ends (shutdown). A run in progress then
    /// finishes (or times out); pending paths, and a backoff under way, are dropped.
    private func work(folder: String, command: String, feed: AsyncStream<DaemonEvent>) async {
        let schedule = Locked(HookSchedule(backoff: hooks.backoff, maxBackoff: hooks.maxBackoff))
        let peers = Locked<[String]>([])
        let closed = Flag()
        await withTaskGroup(of: Void.self) { group in
            let (wake, waker) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
            group.addTask {
                for await event in feed {
                    schedule.withLock { $0.applied(event.paths ?? []) }
                    if let device = event.device { peers.withLock { if !$0.contains(device) { $0.append(device) } } }
                    waker.yield()
                }
                closed.raise()
                waker.finish()
            }
            group.addTask { [self] in
                for await _ in wake {
                    while true {
                        let now = Self.now
                        switch schedule.withLock({ $0.next(now: now) }) {
                        case .idle:
                            break
                        case .wait(let until):
                            // In short steps: shutdown does not wait out a backoff.
                            try? await Task.sleep(for: .seconds(min(0.2, until - now)))
                            if Task.isCancelled || closed.isRaised { return }
                            continue
                        case .run(let paths):
                            let from = peers.withLock { p in defer { p = [] }; return p }
                            let ok = await runOnce(folder: folder, command: command, paths: paths, peers: from)
                            let delay: Double = schedule.withLock { s in
                                s.finished(paths, succeeded: ok, now: Self.now)
                                return s.delay
                            }
                            if !ok { logger.warning("on_apply hook of \(folder) failed; next run in \(HumanUnits.duration(delay)) with the same paths", metadata: ["folder": "\(folder)"]) }
                            continue
                        }
                        break
                    }
                }
            }
        }
    }

    private static var now: Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// One run; true when the hook exited 0 within the timeout.
    func runOnce(folder: String, command: String, paths: [String], peers: [String]) async -> Bool {
        let listing = paths.joined(separator: "\n") + (paths.isEmpty ? "" : "\n")
        var environment: [Environment.Key: String?] = [
            "SYNCD_FOLDER": folder, "SYNCD_PATH_COUNT": String(paths.count),
            "SYNCD_PEER": peers.joined(separator: " "),
        ]
        if listing.utf8.count <= Self.environmentLimit {
            environment["SYNCD_PATHS"] = listing
        } else {
            environment["SYNCD_PATHS_TRUNCATED"] = "1"
        }
        // Stdin is a file, not a pipe: a hook that does not read it never blocks the daemon.
        let input = FileManager.default.temporaryDirectory.appendingPathComponent("syncd-on-apply-\(UUID().uuidString)").path
        guard FileManager.default.createFile(atPath: input, contents: Data(listing.utf8), attributes: [.posixPermissions: 0o600]),
              let fd = try? FileDescriptor.open(FilePath(input), .readOnly) else {
            logger.error("on_apply hook of \(folder): cannot write its input under \(FileManager.default.temporaryDirectory.path)")
            return false
        }
        unlink(input)
        defer { try? fd.close() }
        var options = PlatformOptions()
        options.createSession = true   // its own process group: a timeout stops what it started too
        options.teardownSequence = [.send(signal: .terminate, toProcessGroup: true, allowedDurationToNextStep: .seconds(2))]
        let started = DispatchTime.now()
        let timeout = hooks.timeout
        let logger = self.logger, env = environment, platformOptions = options
        let outcome: Result<TerminationStatus, Error>? = await withTaskGroup(of: Result<TerminationStatus, Error>?.self) { group in
            group.addTask {
                do {
                    let result = try await Subprocess.run(
                        .path("/bin/sh"), arguments: ["-c", command], environment: .inherit.updating(env),
                        workingDirectory: FilePath(folder), platformOptions: platformOptions,
                        input: .fileDescriptor(fd, closeAfterSpawningProcess: false),
                        output: .fileDescriptor(.standardError, closeAfterSpawningProcess: false),
                        error: .fileDescriptor(.standardError, closeAfterSpawningProcess: false))
                    return .success(result.terminationStatus)
                } catch {
                    return .failure(error)
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(timeout))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        let ms = (DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1_000_000
        switch outcome {
        case nil:
            logger.warning("on_apply hook of \(folder) ran longer than \(HumanUnits.duration(timeout)); stopped")
            return false
        case .failure(let error)?:
            logger.warning("on_apply hook of \(folder) could not run: \(error)")
            return false
        case .success(let status)?:
            if status.isSuccess {
                logger.info("on_apply hook of \(folder) ran for \(paths.count) paths in \(ms) ms")
                return true
            }
            logger.warning("on_apply hook of \(folder) failed (\(status)) after \(ms) ms")
            return false
        }
    }
}
