/// The control API between `syncd` commands and the running daemon: one JSON object per line
/// over the unix socket `<home>/syncd.sock` (mode 0600). See Docs/UserGuide.md.
public struct ControlRequest: Codable, Sendable, Equatable {
    public enum Command: String, Codable, Sendable {
        case status, add, remove, id, peers, flush, acceptDeletions = "accept-deletions", benchPeer = "bench-peer"
    }
    public var command: Command
    public var path: String?
    /// For `add`: the secret to join with; nil with `generate` makes a new read-write secret.
    public var secret: String?
    public var generate: Bool?
    /// For `bench-peer`: the peer (a device id or a unique prefix) and how many bytes to pull.
    public var peer: String?
    public var bytes: Int64?

    public init(command: Command, path: String? = nil, secret: String? = nil, generate: Bool? = nil,
                peer: String? = nil, bytes: Int64? = nil) {
        self.command = command; self.path = path; self.secret = secret; self.generate = generate
        self.peer = peer; self.bytes = bytes
    }
}

public struct ControlResponse: Codable, Sendable, Equatable {
    public var ok: Bool
    public var error: String?
    public var status: StatusReport?
    public var secret: String?
    public var folderId: String?
    public var device: String?
    public var peers: PeersReport?
    /// For `accept-deletions`: how many missing paths were recorded as deleted.
    public var deletions: Int?
    /// For `add`: the path was already shared with this secret, and nothing changed.
    public var alreadyShared: Bool?
    /// For `bench-peer`: the measurement.
    public var bench: PeerBenchReport?

    public init(ok: Bool, error: String? = nil, status: StatusReport? = nil, secret: String? = nil,
                folderId: String? = nil, device: String? = nil, peers: PeersReport? = nil, deletions: Int? = nil,
                alreadyShared: Bool? = nil, bench: PeerBenchReport? = nil) {
        self.ok = ok; self.error = error; self.status = status; self.secret = secret
        self.folderId = folderId; self.device = device; self.peers = peers; self.deletions = deletions
        self.alreadyShared = alreadyShared; self.bench = bench
    }

    public static func failure(_ message: String) -> ControlResponse { ControlResponse(ok: false, error: message) }
}

/// `syncd status --json`. Field names are a contract for scripts: add, never rename.
public struct StatusReport: Codable, Sendable, Equatable {
    public struct Folder: Codable, Sendable, Equatable {
        public var path: String
        public var folderId: String
        public var access: String
        /// "idle" (no peer connected), "syncing" (anything pending, pulled, applying, or a
        /// connected peer not caught up), "in sync" (what `syncd wait` requires holds), "scanning",
        /// "error" (paused; `error` says why) or "unknown" (contents being recovered).
        public var state: String
        /// Why the folder is paused (state "error"), or what it waits for (state "unknown").
        public var error: String?
        public var localFiles: Int
        public var localDirectories: Int
        public var localSymlinks: Int
        public var localBytes: Int64
        public var sequence: Int64
        public var watching: Bool
        /// Sealed manifests received from peers and kept (verified) for this folder.
        public var remoteManifests: Int?
        /// Files and bytes being pulled from peers right now.
        public var needFiles: Int?
        public var needBytes: Int64?
        /// Conflicts resolved since the daemon started (each left a conflict copy).
        public var conflicts: Int?
        /// Bytes received from and sent to peers for this folder since the daemon started.
        public var bytesIn: Int64?
        public var bytesOut: Int64?
        /// Every peer gossip knows for this folder; `sequence` is how far it acknowledged our index.
        public var peers: [Peer]?
        /// True while scans or applies are queued (`syncd wait` waits for false).
        public var busy: Bool?
        /// Why the last pull failed (a full disk, a peer that lost a chunk); retried automatically.
        public var pullError: String?
        /// The pending set being pulled (nil when nothing is): files and bytes done since it
        /// started and still to go, the rate and the estimated time left.
        public var progress: Progress?
        /// Batches from peers applied, and errors reported (a pause, a batch that failed), since
        /// the daemon started.
        public var applies: Int?
        public var errors: Int?
        /// Whether a session with a peer has been up since the daemon started (`/readyz`).
        public var reachedPeer: Bool?

        public struct Progress: Codable, Sendable, Equatable {
            public var doneFiles: Int
            public var totalFiles: Int
            public var doneBytes: Int64
            public var totalBytes: Int64
            /// doneBytes / totalBytes (files when no bytes are pending), 0 to 100.
            public var percent: Double
            /// Bytes per second since the pending set started; nil in its first second.
            public var bytesPerSecond: Double?
            /// Seconds left at that rate; nil while the rate is unknown.
            public var etaSeconds: Double?
        }

        public struct Peer: Codable, Sendable, Equatable {
            public var device: String
            public var connected: Bool
            public var sequence: UInt64
            public var needBytes: Int64
            /// How far this device holds the peer's own index, and how far the peer announced it
            /// (read-write peers; 0 otherwise): a receiver is caught up when they are equal.
            public var applied: UInt64?
            public var announced: UInt64?
            /// Anti-entropy: "agree", "differ", "pending" or "n/a" (see Docs/UserGuide.md).
            public var digest: String?
            /// The first group of `device`: how the human `status` and the logs name it.
            public var name: String?
            /// What gossip says of the member: "alive", "suspect", "dead" or "left".
            public var gossip: String?
            /// Round-trip time of the session, in milliseconds (nil before the first pong).
            public var rttMs: Double?
            /// Sequences of ours the peer has not acknowledged, and of its own it announced that
            /// we have not applied.
            public var sendLag: UInt64?
            public var receiveLag: UInt64?
            /// How long (seconds) either lag has been above zero, as observed by status queries.
            public var lagSeconds: Double?
            /// When a session with the peer was last up (seconds since 1970; now while connected),
            /// nil when none was since the daemon started.
            public var lastSeen: Double?
        }
    }

    public var device: String
    public var version: String
    /// The session address actually bound (`--listen` with port 0 picks one).
    public var listen: String?
    /// The HTTP endpoint's bound address (`--http`), nil when it is off.
    public var http: String?
    /// Gossip members by state ("alive", "suspect", "dead", "left"), this device included.
    public var members: [String: Int]?
    public var folders: [Folder]
}

/// `syncd bench peer --json`: transfer throughput from a peer over the folder's live session.
/// Field names are a contract for scripts: add, never rename. MB is 10^6 bytes.
public struct PeerBenchReport: Codable, Sendable, Equatable {
    public var bench = "peer"
    /// The peer's whole device id.
    public var peer: String
    public var folder: String
    /// Bytes pulled (what was asked: every answer is checked to be as long as its request).
    public var bytes: Int64
    /// From the first request to the last byte.
    public var seconds: Double
    public var mbPerSecond: Double
    /// Median round trip of empty bench requests over the session, before the transfer.
    public var rttMilliseconds: Double
    /// Bytes per request, and requests in flight.
    public var requestBytes: Int
    public var window: Int

    public init(peer: String, folder: String, bytes: Int64, seconds: Double, mbPerSecond: Double, rttMilliseconds: Double,
                requestBytes: Int, window: Int) {
        self.peer = peer; self.folder = folder; self.bytes = bytes; self.seconds = seconds; self.mbPerSecond = mbPerSecond
        self.rttMilliseconds = rttMilliseconds; self.requestBytes = requestBytes; self.window = window
    }
}

/// `syncd peers --json`: every member gossip knows, this device included.
public struct PeersReport: Codable, Sendable, Equatable {
    public struct Member: Codable, Sendable, Equatable {
        public struct Folder: Codable, Sendable, Equatable {
            public var folderId: String
            public var sequence: UInt64
        }
        public var device: String
        public var address: String
        public var status: String
        public var incarnation: UInt64
        public var folders: [Folder]
        public var local: Bool?
    }
    public var members: [Member]
}

public enum SyncdVersion {
    public static let string = "0.1.0"
}
