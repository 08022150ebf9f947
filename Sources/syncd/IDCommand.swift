import ArgumentParser
import SyncDaemon
import SyncSecurity

struct IDCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "id", abstract: "Print this device's id.")

    @OptionGroup var home: HomeOption

    func run() throws {
        // Ask the running daemon; without one, read (or create) the key in the home directly.
        if let response = try? ControlClient.send(ControlRequest(command: .id), home: home.resolved),
           let device = response.device {
            print(device)
            return
        }
        let h = home.resolved
        try h.create()
        print(try DeviceIdentity.loadOrCreate(at: h.deviceKeyPath).deviceID)
    }
}
