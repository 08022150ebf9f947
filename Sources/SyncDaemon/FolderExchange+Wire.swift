@preconcurrency import Crypto
import Foundation
import Logging
import SyncCore
import SyncFS
import SyncReplication
import SyncSecurity
import SyncStore
import SyncWire

/// Between the model's values (SyncReplication.FolderModel) and the session's messages (SyncWire).
extension FolderExchange {
    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    static func modelAccess(_ a: SessionMessage.AccessByte) -> FolderModel.Access {
        switch a { case .readWrite: .readWrite; case .readOnly: .readOnly; case .storage: .storage }
    }

    static func modelAccess(_ a: AccessKind) -> FolderModel.Access {
        switch a { case .readWrite: .readWrite; case .readOnly: .readOnly; case .storage: .storage }
    }

    static func modelDigest(_ d: SessionMessage.Digest) -> FolderModel.Digest { .init(sequence: d.sequence, liveCount: d.liveCount, hash: d.hash) }

    /// The wire form of the model's messages (manifests are sealed by `sendManifest`).
    static func wire(_ m: FolderModel.Message) -> SessionMessage {
        switch m {
        case let .hello(access, indexID, sequence):
            let byte: SessionMessage.AccessByte = switch access { case .readWrite: .readWrite; case .readOnly: .readOnly; case .storage: .storage }
            return .hello(.init(access: byte, indexID: indexID, sequence: sequence))
        case let .indexAck(origin, indexID, sequence): return .indexAck(origin: origin, indexID: indexID, sequence: sequence)
        case .digest(let d): return .digest(.init(sequence: d.sequence, liveCount: d.liveCount, hash: d.hash))
        case .manifest: preconditionFailure("manifests are sealed by sendManifest")
        }
    }
}
