@preconcurrency import Crypto
import Foundation
import Logging
import SyncCore
import SyncFS
import SyncReplication
import SyncSecurity
import SyncStore
import SyncWire

extension FolderExchange {
    /// One established session with a peer for this folder: how to reach it. What is known of
    /// the session (acknowledgements, digests, failed origins…) is in `model`.
    final class PeerLink: @unchecked Sendable {
        let device: DeviceID
        let send: @Sendable (SessionMessage) -> Void
        /// Whether both sides offered deflate for this session: chunks we serve may then go as
        /// `dataDeflated` (Protocol/wire.md, "Compression").
        let deflate: Bool
        /// Ends the session; the dialer reconnects and the peer resends from our applied floor.
        var close: (@Sendable (String) -> Void)?
        /// The access the peer said in its hello (nil before).
        var access: SessionMessage.AccessByte?
        /// Sealed chunks already pushed to this (storage) peer.
        var storedChunks: Set<ChunkID> = []
        /// What this peer holds of other origins' indexes (relays from a storage peer).
        var floors: [UInt64: (indexID: UInt64, sequence: UInt64)] = [:]
        var relayed = false
        /// Sends, then calls back once the message is handed to the socket (or the session is
        /// gone): what bounds the bench answers a peer can make us buffer. Nil: `send`, then at once.
        var sendWritten: (@Sendable (SessionMessage, @escaping @Sendable () -> Void) -> Void)?
        /// Bytes handed to the session and not yet written to its socket: they pile up when the
        /// link (or the peer) is slower than we serve (set by the session).
        var backlog: @Sendable () -> Int = { 0 }
        init(device: DeviceID, deflate: Bool = false, send: @escaping @Sendable (SessionMessage) -> Void) {
            self.device = device; self.deflate = deflate; self.send = send
        }

        func sendTracked(_ message: SessionMessage, written: @escaping @Sendable () -> Void) {
            if let sendWritten { sendWritten(message, written) } else { send(message); written() }
        }
    }

    /// A chunk request in flight: answered once (the chunk, or nil for a refusal, a timeout or a
    /// session that ended), waited on by any number of stagers. A condition variable, not a
    /// semaphore: libdispatch traps when a semaphore is freed below its initial value, which a
    /// request abandoned mid-wait did (SIGILL in `_dispatch_semaphore_dispose`).
    final class PendingRequest: @unchecked Sendable {
        private let condition = NSCondition()
        private var answered = false
        private var answer: [UInt8]?
        private var deflatedFrom: UInt32?
        /// The peer asked (its short id), so a session that ends fails its requests at once.
        var peer: ShortDeviceID = 0
        /// Called once the answer (or a refusal) is in, on the answering thread.
        var onDone: (@Sendable () -> Void)?

        private var refused = false

        /// The chunk's bytes once answered, as they came; nil before, or when refused.
        var bytes: [UInt8]? { condition.lock(); defer { condition.unlock() }; return answer }

        /// The chunk's size when `bytes` are raw deflate (a `dataDeflated` answer), nil for plain bytes.
        var rawSize: UInt32? { condition.lock(); defer { condition.unlock() }; return deflatedFrom }

        /// Whether the peer itself answered that it does not have the chunk (request-failed) —
        /// not a session that ended or a peer left out for stalling, which also answer nil.
        var refusedByPeer: Bool { condition.lock(); defer { condition.unlock() }; return refused }

        /// Records the answer (the first one counts) and wakes every waiter.
        func complete(_ bytes: [UInt8]?, refusedByPeer: Bool = false, deflatedFrom rawSize: UInt32? = nil) {
            condition.lock()
            guard !answered else { condition.unlock(); return }
            answered = true
            answer = bytes
            deflatedFrom = bytes == nil ? nil : rawSize
            refused = bytes == nil && refusedByPeer
            let done = onDone
            onDone = nil   // it may hold this request (and its bytes): break the cycle
            condition.broadcast()
            condition.unlock()
            done?()
        }

        /// Whether the answer came within `timeout` seconds; once it has, every wait returns at once.
        func wait(_ timeout: TimeInterval) -> Bool {
            let deadline = Date().addingTimeInterval(timeout)
            condition.lock()
            defer { condition.unlock() }
            while !answered {
                if !condition.wait(until: deadline) { return answered }
            }
            return true
        }
    }
}
