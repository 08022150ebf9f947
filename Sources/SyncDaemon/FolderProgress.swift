import Foundation

/// What `status` says of a folder's pull, from counters the exchange keeps: a pure value that
/// every status query feeds (the time is passed in, so tests never sleep).
///
/// A *pending set* starts when something is pending (the batch applying and the batches queued
/// behind it) and ends when nothing is. Its total is what was done since it started plus what is
/// still pending, so batches that arrive meanwhile grow it. Within the batch applying, the bytes
/// received from peers count as done (a large file shows progress before it is placed).
struct FolderProgress {
    /// One reading of the exchange's counters.
    struct Sample: Equatable {
        /// Entries and bytes of the batch applying and of those queued.
        var pendingFiles: Int
        var pendingBytes: Int64
        /// Running totals: entries and bytes of batches that left the apply, and bytes received.
        var doneFiles: Int
        var doneBytes: Int64
        var bytesIn: Int64
        /// Bytes of the batch applying (the received bytes count toward it only).
        var applyingBytes: Int64
    }

    private struct Start {
        var time: Double
        var doneFiles: Int
        var doneBytes: Int64
    }
    private var start: Start?
    /// Bytes received when the batch applying was first seen, and the running total of done
    /// bytes then (it moves when that batch leaves).
    private var batchStart: (bytesIn: Int64, doneBytes: Int64)?

    /// The progress at `now` (seconds, any monotonic origin); nil when nothing is pending.
    mutating func observe(_ s: Sample, now: Double) -> StatusReport.Folder.Progress? {
        guard s.pendingFiles > 0 || s.pendingBytes > 0 else { start = nil; batchStart = nil; return nil }
        if start == nil { start = Start(time: now, doneFiles: s.doneFiles, doneBytes: s.doneBytes) }
        let from = start!
        // A new batch started applying when the running total moved (the previous one left).
        if batchStart == nil || batchStart!.doneBytes != s.doneBytes { batchStart = (s.bytesIn, s.doneBytes) }
        let received = s.applyingBytes > 0 ? min(s.applyingBytes, max(0, s.bytesIn - batchStart!.bytesIn)) : 0
        let doneFiles = max(0, s.doneFiles - from.doneFiles)
        let doneBytes = max(0, s.doneBytes - from.doneBytes) + received
        let left = max(0, s.pendingBytes - received)
        let totalBytes = doneBytes + left
        let totalFiles = doneFiles + s.pendingFiles
        let percent = totalBytes > 0 ? Double(doneBytes) * 100 / Double(totalBytes)
            : (totalFiles > 0 ? Double(doneFiles) * 100 / Double(totalFiles) : 0)
        let elapsed = now - from.time
        let rate: Double? = elapsed >= 1 ? Double(doneBytes) / elapsed : nil
        let eta: Double? = rate.flatMap { $0 > 0 ? Double(left) / $0 : nil }
        return .init(doneFiles: doneFiles, totalFiles: totalFiles, doneBytes: doneBytes, totalBytes: totalBytes,
                     percent: (percent * 10).rounded() / 10, bytesPerSecond: rate.map { $0.rounded() },
                     etaSeconds: eta.map { ($0 * 10).rounded() / 10 })
    }
}

/// How long each peer has been behind (either lag above zero), as status queries saw it.
struct LagClock: Equatable {
    private var behindSince: [String: Double] = [:]

    /// Seconds `device` has been behind at `now`; 0 when it is not.
    mutating func observe(_ device: String, behind: Bool, now: Double) -> Double {
        guard behind else { behindSince[device] = nil; return 0 }
        let since = behindSince[device] ?? now
        behindSince[device] = since
        return ((now - since) * 10).rounded() / 10
    }
}

/// The folder's `state` in `status`: the scanner's state when it is not idle, else what the
/// replication says — "syncing" while anything is pending or a connected peer is not caught up,
/// "in sync" only when the folder model's `isInSync` holds for every connected peer, "idle" with
/// no peer connected.
enum FolderStateRule {
    static func state(scanner: String, pending: Bool, connectedPeers: Int, inSync: Bool) -> String {
        guard scanner == "idle" else { return scanner }
        if pending { return "syncing" }
        if connectedPeers == 0 { return "idle" }
        return inSync ? "in sync" : "syncing"
    }
}
