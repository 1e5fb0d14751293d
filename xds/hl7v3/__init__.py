"""HL7 V3 messages of the PIX Manager and the PDQ Supplier (ITI-44, 45, 46, 47): small readers
and writers per message on lxml, between the XML and xds.model.person. No I/O, no database:
readers take the SOAP body's element and never raise on its content; writers return elements.

    ns          namespaces, code systems, the interactions and their SOAP actions (INTERACTIONS)
    details     AcknowledgementDetail: what a reader found wrong, as the answer carries it
    datatypes   II, PN, AD, TEL, TS, IVL_TS, INT, BL <-> Identifier, PersonName, Address, Telecom
    wrapper     the transmission wrapper (MessageHeader) and the acknowledgement element
    patient     the Patient role and Person <-> PatientRecord
    feed        ITI-44 add / revise / merge (read and write), ITI-46 update notification (write)
    pix         ITI-45 query (read) and response (write)
    pdq         ITI-47 query and continuation (read) and response (write)
    ack         MCCI_IN000002UV01 accept acknowledgement (write)
    messages    read_message(body): the reader the root element names
    schemas     MessageSchemas: validation against the NE2008 schemas, as acknowledgementDetails
"""
