import ArgumentParser
import Foundation
import SyncDaemon

struct PeersCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "peers",
                                                    abstract: "List the cluster members gossip knows, this device included.")

    @OptionGroup var home: HomeOption

    @Flag(help: "Machine-readable output.")
    var json = false

    func run() throws {
        let response = try call(ControlRequest(command: .peers), home: home.resolved)
        guard let peers = response.peers else { throw CLIError("the daemon sent no member list") }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(peers), as: UTF8.self))
            return
        }
        for m in peers.members {
            print("\(m.device)  \(m.address)  \(m.status)  incarnation \(m.incarnation)\(m.local == true ? "  (this device)" : "")")
            for f in m.folders { print("  folder \(f.folderId)  sequence \(f.sequence)") }
        }
    }
}
