import Foundation
import SyncCore
import SyncSecurity
import SyncWire

/// `syncd bench peer` over a folder's sessions (Protocol/wire.md, "Bench"; Docs/Operations.md):
/// - serves a peer's bench requests from `scratch`, a fixed buffer in memory — a peer with the
///   secret can make us send, but never makes us read or write anything of the folder — at most
///   `PeerBenchRun.maxOutstanding` per session not yet written to the socket (one more closes the
///   session, so a peer that asks without reading cannot make us buffer more than 32 MiB);
/// - runs a `PeerBenchRun` against one peer, blocking its caller (a control request) until it ends.
///
/// Owned by `FolderExchange`, which hands it the bench messages and the sessions that end.
final class PeerBench: @unchecked Sendable {
    /// 1 MiB (less 5 bytes, `SessionMessage.maxBenchBytes`) of pseudo-random bytes (xorshift, fixed seed): made once, the same every run, and
    /// incompressible, so no layer below can flatter the figure.
    static let scratch: [UInt8] = {
        var bytes = [UInt8](repeating: 0, count: 1 << 20)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        bytes.withUnsafeMutableBytes { raw in
            for i in stride(from: 0, to: raw.count, by: 8) {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17
                raw.storeBytes(of: state, toByteOffset: i, as: UInt64.self)
            }
        }
        return Array(bytes.prefix(Int(SessionMessage.maxBenchBytes)))
    }()

    /// What `syncd bench peer` pulls by default, and at most (the CLI takes MiB).
    static let defaultBytes = 256 << 20
    static let maxBytes = 4096 << 20

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    private final class Run {
        var machine: PeerBenchRun
        var outcome: Result<PeerBenchRun.Result, Failure>?
        init(_ machine: PeerBenchRun) { self.machine = machine }
    }

    /// Guards everything below; the running caller waits on it.
    private let condition = NSCondition()
    /// Per session: bench requests received and not yet written to its socket.
    private var serving: [ObjectIdentifier: Int] = [:]
    /// Per session: the run in progress, at most one.
    private var runs: [ObjectIdentifier: Run] = [:]

    private static var now: Duration { .nanoseconds(DispatchTime.now().uptimeNanoseconds) }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        condition.lock()
        defer { condition.unlock() }
        return try body()
    }

    // MARK: serving

    func serve(id: UInt32, size: UInt32, on link: FolderExchange.PeerLink) -> FolderExchange.Outcome {
        let key = ObjectIdentifier(link)
        let admitted: Bool = locked {
            let n = serving[key, default: 0]
            guard n < PeerBenchRun.maxOutstanding else { return false }
            serving[key] = n + 1
            return true
        }
        guard admitted else { return .refuse("more than \(PeerBenchRun.maxOutstanding) bench requests outstanding") }
        link.sendTracked(.benchData(id: id, bytes: Array(Self.scratch[..<Int(size)]))) { [weak self] in
            self?.locked { if let n = self?.serving[key], n > 0 { self?.serving[key] = n - 1 } }
        }
        return .reply([])
    }

    // MARK: running

    /// An answer to one of our bench requests: counted (the bytes are dropped); a wrong length
    /// fails the run and closes the session. An answer to no run of ours is dropped.
    func answer(id: UInt32, bytes: Int, from link: FolderExchange.PeerLink) -> FolderExchange.Outcome {
        locked {
            guard let run = runs[ObjectIdentifier(link)] else { return .reply([]) }
            let directives = run.machine.received(id: id, bytes: bytes, now: Self.now)
            carry(directives, run, link)
            if case .violation(let why)? = directives.last { return .refuse(why) }
            return .reply([])
        }
    }

    /// The session ended: its run fails at once, and what it served is forgotten.
    func ended(_ link: FolderExchange.PeerLink) {
        locked {
            let key = ObjectIdentifier(link)
            serving[key] = nil
            if let run = runs[key] { carry(run.machine.sessionEnded("the session closed"), run, link) }
        }
    }

    /// Measures over `link`, blocking until the run ends (it fails after `settings.timeout`
    /// without an answer, or when the session ends).
    func run(on link: FolderExchange.PeerLink, _ settings: PeerBenchRun.Settings) throws -> PeerBenchRun.Result {
        let key = ObjectIdentifier(link)
        let run = Run(PeerBenchRun(settings: settings, now: Self.now, firstID: UInt32.random(in: 1...UInt32.max / 2)))
        condition.lock()
        defer { condition.unlock() }
        guard runs[key] == nil else { throw Failure("a bench with \(link.device.name) is already running") }
        runs[key] = run
        defer { runs[key] = nil }
        carry(run.machine.start(now: Self.now), run, link)
        while run.outcome == nil {
            let wait = run.machine.nextDeadline - Self.now
            if wait > .zero {
                _ = condition.wait(until: Date().addingTimeInterval(Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18))
            }
            if run.outcome == nil { carry(run.machine.tick(now: Self.now), run, link) }
        }
        return try run.outcome!.get()
    }

    /// Under `condition`.
    private func carry(_ directives: [PeerBenchRun.Directive], _ run: Run, _ link: FolderExchange.PeerLink) {
        for d in directives {
            switch d {
            case .send(let message): link.send(message)
            case .finished(let result): run.outcome = .success(result)
            case .failed(let why), .violation(let why): run.outcome = .failure(Failure("\(link.device.name): \(why)"))
            }
        }
        if run.outcome != nil { condition.broadcast() }
    }

    // MARK: choosing

    /// The peer `text` names: a whole device id or a unique prefix of one (case, dashes and
    /// spaces ignored) among the `known` devices.
    static func choosePeer(_ text: String, known: [DeviceID], me: DeviceID) throws -> DeviceID {
        func plain(_ s: String) -> String { s.uppercased().filter { $0 != "-" && $0 != " " } }
        let wanted = plain(text)
        guard !wanted.isEmpty else { throw Failure("name a peer: its device id or the start of it (syncd status shows them)") }
        let matches = Set(known).filter { $0 != me && plain($0.description).hasPrefix(wanted) }.sorted { $0.description < $1.description }
        guard matches.count <= 1 else {
            throw Failure("\(text) is ambiguous: it matches \(matches.map(\.description).joined(separator: ", "))")
        }
        guard let device = matches.first else {
            if plain(me.description).hasPrefix(wanted) { throw Failure("\(text) is this device; name a peer") }
            let names = Set(known).subtracting([me]).map(\.name).sorted()
            throw Failure("no peer matches \(text) (known peers: \(names.isEmpty ? "none" : names.joined(separator: ", ")))")
        }
        return device
    }

    /// The folder to measure in: `path` if shared, else the only shared folder.
    static func chooseFolder(_ path: String?, shared: [String]) throws -> String {
        if let path {
            guard shared.contains(path) else { throw Failure("\(path) is not a shared folder (shared: \(shared.isEmpty ? "none" : shared.joined(separator: ", ")))") }
            return path
        }
        guard !shared.isEmpty else { throw Failure("no folder is shared; share one with `syncd add PATH --secret`") }
        guard shared.count == 1 else { throw Failure("several folders are shared; choose one with --folder: \(shared.joined(separator: ", "))") }
        return shared[0]
    }
}

extension FolderExchange {
    /// `syncd bench peer`: measures over this folder's session with `device` (`gossip`: what
    /// gossip says of it, for the error when there is no session).
    func runBench(with device: DeviceID, settings: PeerBenchRun.Settings, gossip: String?) throws -> PeerBenchRun.Result {
        guard let link = lock.withLock({ links[device.short] }) else {
            throw PeerBench.Failure("peer \(device.name) is not connected for folder \(record.path)"
                                    + (gossip.map { " (gossip: \($0))" } ?? ""))
        }
        return try bench.run(on: link, settings)
    }

    /// The devices with a session for this folder now.
    var connectedDevices: [DeviceID] { lock.withLock { links.values.map(\.device) } }
}
