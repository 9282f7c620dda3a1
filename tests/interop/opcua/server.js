// An OPC UA server made with node-opcua, an implementation independent of the Python
// stack, for edgeseal's OPC UA interoperability tests (tests/node_opcua.py starts it).
//
//   node server.js PORT PKI_DIR
//
// Listens on 127.0.0.1:PORT only, prints "READY opc.tcp://127.0.0.1:PORT/UA/edgeseal" once
// it accepts connections, and runs until killed or until its standard input closes: the
// test fixture holds a pipe to it, so a test run that dies leaves no server behind (when
// run by hand, from a terminal, Ctrl-D stops it).
//
// PKI_DIR holds everything node-opcua writes: the server's own key and self-signed
// certificate, and the trust lists it fills by accepting every client certificate.
// It is required: without it node-opcua would make its PKI under the home directory.
//
// Security: policy None, and Basic256Sha256 in Sign and SignAndEncrypt, accepting any
// client certificate. Users: anonymous, or user "edgeseal" with password "interop".
//
// Address space, in namespace urn:edgeseal:interop (index 2, after node-opcua's own; a
// client resolves it through the NamespaceArray), under Objects/Press (s=Press), every
// variable readable and writable:
//   s=Press.Temperature    Double      changes every 200 ms (60 + 5 sin t)
//   i=101 Pressure         Double      AnalogItem: EURange 0..250, unit bar; 101.325
//   i=102 Offset           Int32       -42
//   s=Press.Running        Boolean     true
//   s=Press.Recipe         String      "Bracket-7 Ø12 µm"
//   i=103 Signature        ByteString  de ad be ef 00 01
//   s=Press.LastService    DateTime    2024-01-02T03:04:05.678Z
//   i=104 Profile          Double[]    [0.5, 1.5, -2.25, 1e10], value rank 1
//   s=Press.Overheat       Boolean     true activates OverheatAlarm, false clears it
//   s=Press.OverheatAlarm  OffNormalAlarmType condition named Overheat, source Press; its
//                          events have Severity 150 and ActiveState/Id true or false
//   s=Press.Announce       String      each write raises a PressEventType event on Press,
//                                      Message = the text, Severity 500, CycleNumber 1, 2, ...
//   s=PressEventType       a subtype of BaseEventType with a UInt32 property CycleNumber
// Events of Press also reach subscribers of the Server object (i=2253).
//
// node-opcua is pinned at 2.182.2 (package.json): the releases after it need Node.js 22.
"use strict";

const path = require("node:path");
const {
    DataType,
    EventNotifierFlags,
    LocalizedText,
    MessageSecurityMode,
    OPCUACertificateManager,
    OPCUAServer,
    SecurityPolicy,
    standardUnits,
    Variant,
    VariantArrayType,
} = require("node-opcua");

const NAMESPACE_URI = "urn:edgeseal:interop";
const RESOURCE_PATH = "/UA/edgeseal";
const USER = { name: "edgeseal", password: "interop" };

function certificateManager(rootFolder) {
    return new OPCUACertificateManager({ rootFolder, automaticallyAcceptUnknownCertificate: true });
}

function buildAddressSpace(addressSpace) {
    const ns = addressSpace.registerNamespace(NAMESPACE_URI);
    const server = addressSpace.rootFolder.objects.server;
    // eventSourceOf: events raised on Press also go to the Server object's subscribers, and
    // Press may be the source of a condition (node-opcua insists that a source be linked so)
    const press = ns.addObject({
        nodeId: "s=Press",
        browseName: "Press",
        organizedBy: addressSpace.rootFolder.objects,
        eventSourceOf: server,
        eventNotifier: EventNotifierFlags.SubscribeToEvents,
    });
    const variable = (nodeId, browseName, dataType, value) => {
        const isArray = Array.isArray(value); // a Buffer (ByteString) is a scalar
        return ns.addVariable({
            componentOf: press,
            nodeId,
            browseName,
            dataType,
            valueRank: isArray ? 1 : -1,
            arrayDimensions: isArray ? [0] : null,
            value: new Variant({
                dataType: DataType[dataType],
                arrayType: isArray ? VariantArrayType.Array : VariantArrayType.Scalar,
                value,
            }),
            accessLevel: "CurrentRead | CurrentWrite",
            userAccessLevel: "CurrentRead | CurrentWrite",
        });
    };

    const temperature = variable("s=Press.Temperature", "Temperature", "Double", 60);
    ns.addAnalogDataItem({
        componentOf: press,
        nodeId: "i=101",
        browseName: "Pressure",
        dataType: "Double",
        value: new Variant({ dataType: DataType.Double, value: 101.325 }),
        engineeringUnitsRange: { low: 0, high: 250 },
        engineeringUnits: standardUnits.bar,
    });
    variable("i=102", "Offset", "Int32", -42);
    variable("s=Press.Running", "Running", "Boolean", true);
    variable("s=Press.Recipe", "Recipe", "String", "Bracket-7 Ø12 µm");
    variable("i=103", "Signature", "ByteString", Buffer.from("deadbeef0001", "hex"));
    variable("s=Press.LastService", "LastService", "DateTime", new Date("2024-01-02T03:04:05.678Z"));
    variable("i=104", "Profile", "Double", [0.5, 1.5, -2.25, 1e10]);

    const started = Date.now();
    setInterval(() => {
        const value = 60 + 5 * Math.sin((Date.now() - started) / 1000);
        temperature.setValueFromSource({ dataType: DataType.Double, value });
    }, 200);

    // Part 9 alarm: node-opcua computes the alarm state from the input node itself, so
    // writing Overheat is the whole trigger. The normal state (false) sits in no folder:
    // only the alarm refers to it.
    const overheat = variable("s=Press.Overheat", "Overheat", "Boolean", false);
    const normalState = ns.addVariable({
        nodeId: "s=Press.Overheat.NormalState",
        browseName: "OverheatNormalState",
        dataType: "Boolean",
        value: new Variant({ dataType: DataType.Boolean, value: false }),
    });
    addressSpace.installAlarmsAndConditionsService();
    ns.instantiateOffNormalAlarm({
        alarmType: "OffNormalAlarmType",
        nodeId: "s=Press.OverheatAlarm",
        browseName: "OverheatAlarm",
        conditionName: "Overheat",
        componentOf: press,
        conditionSource: press,
        inputNode: overheat,
        normalState,
    });

    // A custom event type with a field of its own, raised on each write of Announce
    const pressEventType = ns.addEventType({
        nodeId: "s=PressEventType", // addEventType takes addObjectType's options
        browseName: "PressEventType",
        subtypeOf: "BaseEventType",
        isAbstract: false,
    });
    ns.addVariable({
        propertyOf: pressEventType,
        browseName: "CycleNumber",
        dataType: "UInt32",
        modellingRule: "Mandatory",
    });
    const announce = variable("s=Press.Announce", "Announce", "String", "");
    let cycle = 0;
    announce.on("value_changed", (dataValue) => {
        cycle += 1;
        press.raiseEvent(pressEventType, {
            message: { dataType: DataType.LocalizedText, value: new LocalizedText({ text: dataValue.value.value }) },
            severity: { dataType: DataType.UInt16, value: 500 },
            cycleNumber: { dataType: DataType.UInt32, value: cycle },
        });
    });
}

async function main() {
    const [port, pkiDir] = process.argv.slice(2);
    if (!/^\d+$/.test(port || "") || !pkiDir) {
        console.error("usage: node server.js PORT PKI_DIR");
        process.exit(2);
    }
    const server = new OPCUAServer({
        port: Number(port),
        host: "127.0.0.1", // listen on loopback only
        hostname: "127.0.0.1", // and advertise that in the endpoint URLs
        resourcePath: RESOURCE_PATH,
        buildInfo: { productName: "edgeseal interop server" },
        serverCertificateManager: certificateManager(path.join(pkiDir, "server")),
        userCertificateManager: certificateManager(path.join(pkiDir, "user")),
        securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
        securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
        allowAnonymous: true,
        userManager: { isValidUser: (name, password) => name === USER.name && password === USER.password },
    });
    await server.initialize();
    buildAddressSpace(server.engine.addressSpace);
    await server.start();

    let stopping = false;
    const stop = async () => {
        if (stopping) return;
        stopping = true;
        await server.shutdown(0);
        process.exit(0);
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
    process.stdin.on("end", stop);
    process.stdin.resume();

    console.log(`READY opc.tcp://127.0.0.1:${port}${RESOURCE_PATH}`);
}

main().catch((err) => {
    console.error(err);
    process.exit(1);
});
